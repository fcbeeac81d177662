"""`python -m flash_green tour`: the course, live."""
