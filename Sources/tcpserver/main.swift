import UCSPI

TCPServerCommand.main()
