-- TMD confidence per axis (codes: -1 = unknown, NULL = not assigned yet), gate results, batch exclusion.
ALTER TABLE cpe_entry RENAME COLUMN tmd_confidence TO domain_confidence;
ALTER TABLE cpe_entry ADD COLUMN task_confidence real, ADD COLUMN modifier_confidence real, ADD COLUMN tmd_assigner text;

CREATE TABLE gate_result (
    gate_result_id  bigserial PRIMARY KEY,
    batch_id        text NOT NULL REFERENCES batch (batch_id) ON DELETE CASCADE,
    content_hash    text NOT NULL,              -- the batch file version the gate judged
    gate            text NOT NULL,
    decision        text NOT NULL CHECK (decision IN ('GO', 'WARN', 'STOP')),
    blocking        boolean NOT NULL,           -- a STOP of this gate keeps the batch out of training data
    summary         text NOT NULL,
    figures         jsonb NOT NULL,
    thresholds      jsonb NOT NULL,
    worst           jsonb NOT NULL,
    run_id          text,
    evaluated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gate_result_latest ON gate_result (batch_id, gate, evaluated_at DESC);

-- An on-call engineer can keep a batch out of training data on purpose.
ALTER TABLE batch ADD COLUMN excluded_reason text;
