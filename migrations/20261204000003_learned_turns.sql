-- Every turn is learnable: per turn the transcript (secrets masked), the top
-- intents with their scores, the out-of-scope score, the slots, the action
-- taken and what followed (re-asked, re-prompted, fell back, transferred,
-- hung up, …), sealed like the transcript. Rows written before: none.

ALTER TABLE interactions ADD COLUMN turns TEXT NOT NULL DEFAULT '[]';
