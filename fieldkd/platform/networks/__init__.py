"""Feed-forward networks trained over datasets (cascade MVS, density fields) and their geometry."""
