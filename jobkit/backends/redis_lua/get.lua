-- get: KEYS[NQ + 2i - 1], KEYS[NQ + 2i] are the hash and data keys of job i. Returns each job's JSON, or false.
local out = {}
for i = NQ + 1, #KEYS, 2 do out[#out + 1] = job_json(KEYS[i], KEYS[i + 1]) end
return out
