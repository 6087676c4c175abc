"""console-agent: runs an unmodified program on the Messaging Console's settings. Standard library only;
it never imports the console."""
__version__ = "0.1.0"
