"""`python -m synthetic`: train the demo net into the cache (`synthetic.demo.main`)."""

from synthetic.demo import main

main()
