"""The trading system of the design document (section 4), on mesh.

Market-data agents publish batches of ticks from seeded synthetic exchange feeds; technical,
fundamental and sentiment analysis agents turn them into signals; strategy agents decide on
every signal and send orders through a risk agent (limits and positions in the Raft KV) to an
order executor that runs as a Raft-elected singleton and executes each order exactly once
(idempotency keys recorded in the KV, fencing tokens at the exchange); a portfolio agent keeps
the book. ``python -m examples.trading`` runs it on local node processes and measures it; see
README.md beside this file.
"""
