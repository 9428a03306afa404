"""The journal: every order, fill, episode, guard and kill-switch event, in one
hash-chained SQLite log that survives a crash and shows any later edit.

- :class:`Journal` (:mod:`bot.journal.writer`): non-blocking appends, a writer thread,
  group commits, backpressure instead of loss; the ``record_*`` helpers wire each of
  the bot's event sources in one line; recovery helpers for a restart.
- :mod:`bot.journal.records`: record kinds and payloads (the storage design is there).
- :mod:`bot.journal.schema`: tables, views and versioned migrations.
- :mod:`bot.journal.chain`: canonical JSON and the hash chain.
- :class:`JournalReader` (:mod:`bot.journal.reader`): read-only queries (reports).
- :mod:`bot.journal.recovery`: fills the venue has that the journal missed.
- :mod:`bot.journal.audit`: ``verify`` / ``export`` and the ``backstop audit`` commands.
"""

from bot.journal.audit import (
    VerifyReport,
    add_audit_commands,
    export,
    is_audit_command,
    run_audit_command,
    verify,
)
from bot.journal.chain import GENESIS_HASH, canonical_json
from bot.journal.reader import JournalNotFound, JournalReader, Record
from bot.journal.recovery import reconcile_fills
from bot.journal.schema import SCHEMA_VERSION, JournalSchemaError, migrate
from bot.journal.writer import Journal, JournalClosed, JournalStats

__all__ = [
    "GENESIS_HASH",
    "SCHEMA_VERSION",
    "Journal",
    "JournalClosed",
    "JournalNotFound",
    "JournalReader",
    "JournalSchemaError",
    "JournalStats",
    "Record",
    "VerifyReport",
    "add_audit_commands",
    "canonical_json",
    "export",
    "is_audit_command",
    "migrate",
    "reconcile_fills",
    "run_audit_command",
    "verify",
]
