"""Server Manager: the installed namespace; `servermanager.cli` is the product's command line."""
