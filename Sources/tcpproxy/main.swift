import TCPProxy

TCPProxyCommand.main()
