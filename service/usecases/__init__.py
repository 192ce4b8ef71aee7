"""What the newsroom and the operators can do, once, for every door.

The web routers and the CLI commands are thin: they parse their input, call one
function here, and present its result.  These functions own the transaction
(`session_scope`) and ask for later work through the dispatcher; the domain
packages below them hold the rules.
"""
