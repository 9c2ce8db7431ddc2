"""The git collector: which commit, branch and changes the run was started from."""

from __future__ import annotations

from typing import Any

from tracelet.plugins import CollectorPlugin
from tracelet.redaction import redact_uri


class GitCollector(CollectorPlugin):
    """Records git state once, at start, as ``git/...`` parameters (``git/diff`` as text).

    Reads the repository at ``git_repo_path`` (or a parent of it); outside a repository it
    records nothing. The diff is recorded only with ``include_uncommitted_changes``.
    """

    interval = None

    def collect(self) -> dict[str, Any]:
        """Commit, branch, dirty flag, remote (credentials removed), and maybe the diff."""
        import git

        try:
            repo = git.Repo(self.config.get("git_repo_path", "."), search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            return {}
        with repo:
            found: dict[str, Any] = {
                "commit": repo.head.commit.hexsha if repo.head.is_valid() else "",
                "branch": "detached" if repo.head.is_detached else repo.active_branch.name,
                "dirty": repo.is_dirty(untracked_files=True),
            }
            if repo.remotes:
                found["remote"] = redact_uri(repo.remotes[0].url)
            if self.config.get("include_uncommitted_changes"):
                found["diff"] = repo.git.diff("HEAD") if repo.head.is_valid() else ""
        return found
