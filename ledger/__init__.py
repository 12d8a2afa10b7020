"""The ledger: the only package that writes entries, moves balances, places and settles
holds and consumes lots. Every money invariant lives here once:

* I1  cached ``balance`` == Σ credits − Σ debits (``journal``)
* I2  cached ``held`` == Σ active holds (``holds``)
* I3  spending never takes ``balance − held`` below zero; store credit never at all
      (``journal.debit``, and a CHECK on ``dust_accounts``)
* I4  Σ lots.remaining == max(dust balance, 0) (``journal``)
* I5  an order's net earned dust == its target given every fact known (``orders``)

Functions take a SQLAlchemy session inside a transaction opened by the caller; they never
commit.
"""
