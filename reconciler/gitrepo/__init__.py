"""Git, and only here: the services repository read at one commit, and the deploy history kept as git notes.

gitpython is imported by no other package, so everything above works on plain bytes and commit ids.
"""
