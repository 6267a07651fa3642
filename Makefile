# Bastion: build, install and uninstall, as a Unix admin expects.
#
#   make                      the release build of the one executable (swift build)
#   make install              PREFIX=/usr/local, DESTDIR= for a staging root
#   make uninstall            removes exactly what install put there
#   make install-files        the list of what install puts there (one path per line)
#
# One stripped static executable, `bastion`, in $(BINDIR), and a relative symbolic link per
# tool where the originals' packages put them: ucspi-tcp's tools and the frozen-file tools
# in $(BINDIR), the daemons in $(SBINDIR). Manual pages gzipped into man1, man5 and man8;
# the commented example configurations in $(DOCDIR)/examples; the systemd units in
# $(SYSTEMDUNITDIR), their paths rewritten to $(BINDIR) and $(SBINDIR); sockd.conf,
# tcpproxy.conf and default/pop3.proxy in $(SYSCONFDIR) only where none exists yet (never
# overwritten; uninstall removes them only while they are still the example, byte for byte).

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/bastion
SYSCONFDIR ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SWIFT ?= swift
BUILD ?= .build/release
INSTALL ?= install
STRIP ?= strip

BIN_TOOLS := tcprules tcprulescheck tcpserver make_sockdfc dump_sockdfc make_sockdfr dump_sockdfr
SBIN_TOOLS := tcpproxy pop3.proxy sockd
MANPAGES := $(wildcard man/*.[158])
EXAMPLES := examples/sockd.conf examples/tcpproxy-spreadspace.conf examples/tcpproxy-zekoll.conf \
	examples/rules.txt
UNITS := tcpproxy.service sockd.service pop3.proxy.socket pop3.proxy@.service tcpserver@.service
# /etc files: the installed name and the example it comes from.
ETC_FILES := sockd.conf:examples/sockd.conf tcpproxy.conf:examples/tcpproxy-spreadspace.conf \
	default/pop3.proxy:systemd/pop3.proxy.default

.PHONY: all build install uninstall install-files clean

all: build

build:
	$(SWIFT) build -c release --product bastion

$(BUILD)/bastion:
	$(SWIFT) build -c release --product bastion

install: $(BUILD)/bastion
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR)
	$(INSTALL) -m 755 $(BUILD)/bastion $(DESTDIR)$(BINDIR)/bastion
	$(STRIP) $(DESTDIR)$(BINDIR)/bastion
	for t in $(BIN_TOOLS); do ln -sf bastion $(DESTDIR)$(BINDIR)/$$t; done
	for t in $(SBIN_TOOLS); do ln -sf $$(realpath -m --relative-to=$(SBINDIR) $(BINDIR))/bastion \
		$(DESTDIR)$(SBINDIR)/$$t; done
	for p in $(MANPAGES); do \
		s=$${p##*.}; $(INSTALL) -d $(DESTDIR)$(MANDIR)/man$$s; \
		gzip -9n < $$p > $(DESTDIR)$(MANDIR)/man$$s/$$(basename $$p).gz; \
		chmod 644 $(DESTDIR)$(MANDIR)/man$$s/$$(basename $$p).gz; done
	$(INSTALL) -d $(DESTDIR)$(DOCDIR)/examples
	for e in $(EXAMPLES); do $(INSTALL) -m 644 $$e $(DESTDIR)$(DOCDIR)/$$e; done
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR)
	for u in $(UNITS); do \
		sed -e 's|/usr/sbin/|$(SBINDIR)/|g' -e 's|/usr/bin/|$(BINDIR)/|g' -e 's|/etc/|$(SYSCONFDIR)/|g' \
			systemd/$$u > $(DESTDIR)$(SYSTEMDUNITDIR)/$$u; chmod 644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$u; done
	$(INSTALL) -d $(DESTDIR)$(SYSCONFDIR)/default
	for pair in $(ETC_FILES); do \
		f=$(DESTDIR)$(SYSCONFDIR)/$${pair%%:*}; \
		if [ -e $$f ] || [ -L $$f ]; then echo "make install: $$f exists: left as it is"; \
		else $(INSTALL) -m 644 $${pair#*:} $$f; fi; done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/bastion
	for t in $(BIN_TOOLS); do [ ! -L $(DESTDIR)$(BINDIR)/$$t ] || rm -f $(DESTDIR)$(BINDIR)/$$t; done
	for t in $(SBIN_TOOLS); do [ ! -L $(DESTDIR)$(SBINDIR)/$$t ] || rm -f $(DESTDIR)$(SBINDIR)/$$t; done
	for p in $(MANPAGES); do s=$${p##*.}; rm -f $(DESTDIR)$(MANDIR)/man$$s/$$(basename $$p).gz; done
	for e in $(EXAMPLES); do rm -f $(DESTDIR)$(DOCDIR)/$$e; done
	for u in $(UNITS); do rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/$$u; done
	for pair in $(ETC_FILES); do \
		f=$(DESTDIR)$(SYSCONFDIR)/$${pair%%:*}; \
		if [ -f $$f ] && ! cmp -s $$f $${pair#*:}; then echo "make uninstall: $$f was changed: kept"; \
		else rm -f $$f; fi; done
	-rmdir $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) 2>/dev/null
	-for s in 1 5 8; do rmdir $(DESTDIR)$(MANDIR)/man$$s 2>/dev/null; done; true

install-files:
	@echo $(BINDIR)/bastion
	@for t in $(BIN_TOOLS); do echo $(BINDIR)/$$t; done
	@for t in $(SBIN_TOOLS); do echo $(SBINDIR)/$$t; done
	@for p in $(MANPAGES); do echo $(MANDIR)/man$${p##*.}/$$(basename $$p).gz; done
	@for e in $(EXAMPLES); do echo $(DOCDIR)/$$e; done
	@for u in $(UNITS); do echo $(SYSTEMDUNITDIR)/$$u; done
	@for pair in $(ETC_FILES); do echo $(SYSCONFDIR)/$${pair%%:*}; done

clean:
	rm -rf .build
