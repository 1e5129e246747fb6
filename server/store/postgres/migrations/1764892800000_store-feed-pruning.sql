-- Up Migration

-- How far each replica has read the change feed, so that rows every live replica has read can be
-- pruned: `read_xmin` is its feed position (every change of a transaction older than it was read), and
-- `heartbeat_at` (epoch ms, from its own clock) when it last said so. A replica writes its row every
-- few seconds and removes it when it stops; one silent for longer than the feed's maximum age holds
-- nothing back, and the pruner removes its row.
CREATE TABLE store_feed_readers (
  origin text PRIMARY KEY,
  read_xmin xid8 NOT NULL,
  heartbeat_at bigint NOT NULL
);

-- The newest transaction id among the change rows pruned so far (one row). A replica whose feed
-- position is at or below it may have lost a change it had not read: it loads the whole state again.
CREATE TABLE store_feed_horizon (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  pruned_through xid8 NOT NULL
);
INSERT INTO store_feed_horizon (pruned_through) VALUES ('0'::xid8);

-- Pruning removes the oldest rows first, in batches.
CREATE INDEX store_changes_committed_at ON store_changes (committed_at);
