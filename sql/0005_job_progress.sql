-- 0005: jobs report progress (a build's output as it happens, steps of long operations) while
-- they run; clients read it through GET /jobs/{id}.
ALTER TABLE jobs ADD COLUMN progress TEXT;
