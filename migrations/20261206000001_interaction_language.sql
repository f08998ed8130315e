-- The language each call was held in (ISO 639-1), for reports per language
-- and for the caller's next call. Rows written before were all English.

ALTER TABLE interactions ADD COLUMN language TEXT NOT NULL DEFAULT 'en';
