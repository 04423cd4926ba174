"""Feed-forward networks trained over datasets (not fitted per scene): cascade MVS, BTS density fields."""
