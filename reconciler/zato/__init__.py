"""What a Zato server is, per version: profiles, server.conf paths and log lines. Pure; imports nothing outside."""
