"""Developer tools that sit outside the shipped packages (python -m tools.<name>)."""
