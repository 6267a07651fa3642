import UCSPI

TCPServerCommand.main(CommandLine.arguments)
