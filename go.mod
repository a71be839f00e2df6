module github.com/aredn/phonebookd

go 1.26.0

require golang.org/x/sys v0.50.0

require go.uber.org/goleak v1.3.0

require github.com/godbus/dbus/v5 v5.2.4 // indirect
