"""The git collector: which commit, branch and changes the run was started from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tracelet.plugins import CollectorPlugin, TextFile
from tracelet.redaction import redact_uri

DIFF_FILE = "uncommitted.diff"


class GitCollector(CollectorPlugin):
    """Records git state once, at start, as ``git/...`` parameters.

    Reads the repository at ``git_repo_path`` (or a parent of it); outside a repository it
    records nothing. The run's own store (``store_path``) does not make the tree dirty.
    With ``include_uncommitted_changes`` the changes since the last commit
    (``git diff HEAD``), if any, become the text artifact ``git/uncommitted.diff``.
    """

    interval = None

    def collect(self) -> dict[str, Any]:
        """Commit, branch, dirty flag, remote (credentials removed), and maybe the diff."""
        given = str(self.config.get("git_repo_path", "."))
        where = Path(os.path.expandvars(os.path.expanduser(given)))  # as GitPython reads it
        if not _in_repository(where):
            return {}  # (GitPython's import alone costs the training thread 30 ms of GIL)
        import git

        try:
            repo = git.Repo(where, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            return {}
        with repo:
            found: dict[str, Any] = {
                "commit": repo.head.commit.hexsha if repo.head.is_valid() else "",
                "branch": "detached" if repo.head.is_detached else repo.active_branch.name,
                "dirty": repo.is_dirty() or bool(self._untracked(repo)),
            }
            if repo.remotes:
                found["remote"] = redact_uri(repo.remotes[0].url)
            if self.config.get("include_uncommitted_changes"):
                diff = repo.git.diff("HEAD") if repo.head.is_valid() else ""
                if diff:
                    found["diff"] = TextFile(DIFF_FILE, diff)
        return found

    def _untracked(self, repo: Any) -> list[str]:
        """Untracked files, less those of Tracelet's store inside the working tree."""
        root = Path(repo.working_tree_dir).resolve()
        store = Path(self.config.get("store_path", ".tracelet")).resolve()
        inside = store.relative_to(root).as_posix() + "/" if store.is_relative_to(root) else None
        return [f for f in repo.untracked_files if inside is None or not f.startswith(inside)]


def _in_repository(path: Path) -> bool:
    """Whether ``path`` may lie in a git repository: ``GIT_DIR`` is set, or it or a parent
    holds ``.git`` (a folder, or a file for a worktree or submodule)."""
    if os.environ.get("GIT_DIR"):
        return True
    try:
        start = path.resolve()
        return any((folder / ".git").exists() for folder in (start, *start.parents))
    except OSError:  # (a parent it may not read): GitPython decides
        return True
