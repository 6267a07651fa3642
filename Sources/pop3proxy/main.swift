import POP3Proxy

POP3ProxyCommand.main()
