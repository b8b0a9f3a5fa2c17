from stripe_inbox.cli import main

# Guarded: a worker process (the search indexer's) loads this module again, and must not start the CLI.
if __name__ == "__main__":
    main()
