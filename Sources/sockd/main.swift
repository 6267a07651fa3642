import Socks

SockdCommand.main()
