// A grpc-go client of generic.Eventing/StartEventSource, as Argo's generic EventSource is one: it
// prints each event's payload as one line on stdout and, when the stream ends, "END <code> <message>"
// on stderr. Built by the tests in GOPATH mode (Debian's golang-google-grpc-dev); no generated stubs:
// the two messages have only string/bytes fields, encoded here with protowire.
//
// usage: goclient HOST:PORT NAME CONFIG
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawCodec passes bytes through: the messages are encoded and decoded by hand.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	b := v.(*[]byte)
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// payload returns field 2 (Event.payload) of an encoded generic.Event.
func payload(msg []byte) ([]byte, error) {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		msg = msg[n:]
		if typ != protowire.BytesType {
			m := protowire.ConsumeFieldValue(num, typ, msg)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			msg = msg[m:]
			continue
		}
		value, m := protowire.ConsumeBytes(msg)
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		if num == 2 {
			return value, nil
		}
		msg = msg[m:]
	}
	return nil, nil
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: goclient HOST:PORT NAME CONFIG")
		os.Exit(2)
	}
	target, name, config := os.Args[1], os.Args[2], os.Args[3]
	conn, err := grpc.Dial(target, grpc.WithInsecure(), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fmt.Fprintf(os.Stderr, "END Unavailable %v\n", err)
		os.Exit(1)
	}
	defer conn.Close()
	desc := &grpc.StreamDesc{StreamName: "StartEventSource", ServerStreams: true}
	stream, err := conn.NewStream(context.Background(), desc, "/generic.Eventing/StartEventSource")
	if err != nil {
		fmt.Fprintf(os.Stderr, "END %s %s\n", status.Code(err), err)
		os.Exit(1)
	}
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendString(req, name)
	req = protowire.AppendTag(req, 2, protowire.BytesType)
	req = protowire.AppendBytes(req, []byte(config))
	if err := stream.SendMsg(&req); err != nil {
		fmt.Fprintf(os.Stderr, "END %s %s\n", status.Code(err), err)
		os.Exit(1)
	}
	if err := stream.CloseSend(); err != nil {
		fmt.Fprintf(os.Stderr, "END %s %s\n", status.Code(err), err)
		os.Exit(1)
	}
	out := bufio.NewWriter(os.Stdout)
	for {
		var msg []byte
		if err := stream.RecvMsg(&msg); err != nil {
			out.Flush()
			st, _ := status.FromError(err)
			fmt.Fprintf(os.Stderr, "END %s %s\n", st.Code(), st.Message())
			return
		}
		body, err := payload(msg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "END Internal bad event: %v\n", err)
			os.Exit(1)
		}
		out.Write(body)
		out.WriteString("\n")
		out.Flush()
	}
}
