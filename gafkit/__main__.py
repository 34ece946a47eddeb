from gafkit.cli import main

main()
