"""Small helpers shared by the library (file output, ...)."""
