"""The catalogue's schema revisions (Alembic's, in ``alembic/versions``), oldest first; the last is the
head. Kept apart from :mod:`.migrations` so that a reader can compare a catalogue's revision with the
head without importing SQLAlchemy (:mod:`.sqlite_light`)."""

REVISIONS = ("0001", "0002", "0003", "0004", "0005")
HEAD = REVISIONS[-1]
