"""The browser app: ``mofusion serve`` (a FastAPI server and a three.js page, all offline)."""
