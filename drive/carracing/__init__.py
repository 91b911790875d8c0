"""The embedded CarRacing game and everything that exists for it: the game (game.py, the hood view,
traffic), the scripted expert and its recordings, DAgger, take-over corrections, closed-loop evaluation
and the demo recipe. drive's core (agent, loop, ring, controller, keys, takeover) never imports this."""
