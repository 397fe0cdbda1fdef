"""Worker processes: the child side (child.py), the parent side (pool.py) and their messages."""
