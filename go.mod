module github.com/aredn/phonebookd

go 1.26
