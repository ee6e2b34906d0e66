-- The segmentation mode a batch was chunked in (the chunk_boundaries gate grades lengths per mode),
-- and when the alert step handled each gate result (an outbox: every result is looked at once,
-- whoever runs the step: the gate sensor or the CLI).
ALTER TABLE batch ADD COLUMN segmentation_mode text CHECK (segmentation_mode IN ('sentence', 'packed'));
ALTER TABLE gate_result ADD COLUMN notified_at timestamptz;
UPDATE gate_result SET notified_at = evaluated_at;  -- earlier results were handled by the sensor's cursor
CREATE INDEX gate_result_pending ON gate_result (gate_result_id) WHERE notified_at IS NULL;
