"""Talking to the git host (GitHub, GitLab, Gitea) over its REST API: pull request comments and commit statuses."""
