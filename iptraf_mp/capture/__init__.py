"""iptraf-mp capture: capture files (pcap, pcapng read and write), live capture, the recorder."""
