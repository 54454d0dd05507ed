"""flight-mcp: look inside a live Python process, over MCP or from the command line."""
__version__ = "0.1.0"
