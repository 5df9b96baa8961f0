-- checkpoints_subject (workflow_id, subject_id, step) duplicated the leading
-- columns of the UNIQUE (workflow_id, subject_id, step, visit, attempt)
-- constraint's index, which answers the same lookups (trace, "did this
-- subject pass step N", the dead-letter view) as a prefix scan. Every
-- checkpoint paid for one more btree insert for nothing: dropping it made the
-- set-based gate wave ~15% faster (bench/bench_gates.py, docs/benchmarks.md).
DROP INDEX IF EXISTS interp.checkpoints_subject;
