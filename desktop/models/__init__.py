"""Qt item models of what the core reports: the fleet table and plain record lists."""
