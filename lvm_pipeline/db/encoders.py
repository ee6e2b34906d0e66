"""The `encoder` table: one encoder per database, so training targets and the bank share one encoder."""

from __future__ import annotations

import numpy as np
from psycopg2 import sql

from lvm_pipeline.encoders import same_encoder
from lvm_pipeline.errors import EncoderMismatchError


def register_encoder(cur, name: str, dimension: int, fingerprint: str, probe: np.ndarray) -> int:
    """The encoder id of this database, registering it (and sizing the vector column) the first time.

    Raises EncoderMismatchError when the database holds another encoder's vectors.
    """
    cur.execute("LOCK TABLE encoder IN EXCLUSIVE MODE")
    cur.execute("SELECT encoder_id, name, dimension, fingerprint, probe_vector FROM encoder")
    registered = cur.fetchone()  # at most one row: this function never adds a second
    if registered:
        encoder_id, other_name, other_dim, other_fp, other_probe = registered
        if other_dim == dimension and same_encoder(other_probe, probe):
            return encoder_id
        raise EncoderMismatchError(
            f"this database holds vectors of encoder {other_name!r} ({other_dim}-D, fingerprint {other_fp}); "
            f"refusing to mix in {name!r} ({dimension}-D, fingerprint {fingerprint}). Use the same encoder "
            f"(LVM_ENCODER), or another database (LVM_DATABASE_URL / LVM_DATA_DIR).")
    cur.execute(
        "INSERT INTO encoder (name, dimension, fingerprint, probe_vector) VALUES (%s, %s, %s, %s) RETURNING encoder_id",
        (name, dimension, fingerprint, [float(x) for x in probe]))
    encoder_id = cur.fetchone()[0]
    cur.execute(sql.SQL("ALTER TABLE cpe_vector ALTER COLUMN concept_vec TYPE vector({})").format(sql.Literal(dimension)))
    return encoder_id


def registered_encoders(cur) -> list[tuple[int, str]]:
    """(dimension, fingerprint) of the database's encoder: none before the first batch is embedded, else one."""
    cur.execute("SELECT dimension, fingerprint FROM encoder")
    return cur.fetchall()
