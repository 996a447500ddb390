from nbplugins.cli import main

main()
