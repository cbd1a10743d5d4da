-- Where a recent window of the log starts (migration 3): the first seq
-- written at or after a time, for `Log::seq_before_time` (quota counts at
-- start-up read only their widest window). Writers' clocks may step back,
-- so this asks for the least seq among rows at or after the time, which
-- this index answers from the window's rows alone.
CREATE INDEX charter_events_time ON charter_events (log, time_ms, seq);
