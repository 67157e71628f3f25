"""Operations for a team sharing one tracking server, one DVC remote and one production alias: the tracking
server (PostgreSQL + proxied artifacts), moving a local store to it, the promotion gate, promote and
rollback. ops/ may import the core, pipeline/, serve/ and testkit/; nothing there imports ops/.
docs/teams.md has every command."""
