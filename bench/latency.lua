-- wrk script: after the run, print every recorded latency (microseconds)
-- with its count, so that rounds can be pooled and percentiles taken over
-- all of a path's requests rather than one round's. Defines only done(),
-- which wrk calls once at the end: the request path is unchanged.
done = function(summary, latency, requests)
  local t = {}
  for i = 1, #latency do
    local v, c = latency(i)
    t[#t + 1] = string.format("%d:%d", v, c)
  end
  io.write("HIST " .. table.concat(t, ",") .. "\n")
end
