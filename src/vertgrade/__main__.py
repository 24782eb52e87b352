from vertgrade.cli import run

run()
