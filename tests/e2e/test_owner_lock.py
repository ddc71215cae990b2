"""One process owns a SQLite file, and whoever meets it is told which: the owner's pid and the MCP URL
it really serves at (its lock file records them), not the refused process's own settings."""

from __future__ import annotations

from tests.support import ServerProcess, serve_refused


def test_a_second_server_on_the_file_names_the_first_ones_pid_and_url(server: ServerProcess) -> None:
    """The refused server has a port of its own (VIBE_PORT): the message names the owner's."""
    done = serve_refused(server.data_dir)
    assert done.returncode == 1, done.stderr
    line = " ".join(done.stderr.split())  # one line, however the terminal would wrap it
    assert "is already in use by another Vibe Ensemble server" in line
    assert f"(pid {server.proc.pid}: `vibe-ensemble serve`, MCP at {server.mcp_url})" in line
