"""Apply: carry out a plan on the servers (hot-deploy now; rolling restarts for static installs)."""
