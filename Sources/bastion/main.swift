import MultiCall

MultiCall.main()
