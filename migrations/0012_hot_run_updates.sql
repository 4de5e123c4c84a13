-- A run's row is updated at every step (queued -> running -> queued ... -> completed) and its
-- attempt once when it ends. Such an update is HOT (no new entry in any index) only if no
-- index, nor any index's predicate, holds a column it changes, and the page has room for the
-- new version. So the open runs of a contact are indexed by `finished_at IS NULL` (set only
-- when a run completes, fails or is cancelled), not by `status`; the ordering check and the
-- waiting-run lookups add that predicate and filter the status on the row. And new pages of
-- both tables keep room for the next versions.
DROP INDEX runs_active_customer;
DROP INDEX runs_waiting;
CREATE INDEX runs_open_customer ON runs (customer_id, sender_id) WHERE finished_at IS NULL;
ALTER TABLE runs SET (fillfactor = 70);
ALTER TABLE step_attempts SET (fillfactor = 80);
