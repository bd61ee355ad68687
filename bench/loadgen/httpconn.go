package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// httpConn is one keep-alive HTTP/1.1 connection with one request in flight, used by the
// measured runs instead of net/http's client: on a machine whose two cores also run the
// service and the database, the load generator's own CPU time is taken from what is
// measured, and this costs a fraction of the client's (no goroutines or channels per
// request, one write and usually one read system call). It understands what the service
// answers: Content-Length or chunked bodies, no body on 204 and 304, Connection: close.
type httpConn struct {
	addr, host string
	conn       net.Conn
	r          *bufio.Reader
	w          []byte
}

func newHTTPConn(base string) (*httpConn, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("bad base URL %q: only http://host:port is supported", base)
	}
	addr := u.Host
	if u.Port() == "" {
		addr += ":80"
	}
	return &httpConn{addr: addr, host: u.Host}, nil
}

func (hc *httpConn) close() {
	if hc.conn != nil {
		hc.conn.Close()
		hc.conn = nil
	}
}

// do sends c and reads the answer's body into buf; on any error the connection is
// dropped, and the next request dials a new one.
func (hc *httpConn) do(c call, buf *bytes.Buffer) (int, error) {
	if hc.conn == nil {
		conn, err := net.DialTimeout("tcp", hc.addr, 5*time.Second)
		if err != nil {
			return 0, err
		}
		hc.conn = conn
		if hc.r == nil {
			hc.r = bufio.NewReaderSize(conn, 64<<10)
		} else {
			hc.r.Reset(conn)
		}
	}
	status, err := hc.roundTrip(c, buf)
	if err != nil {
		hc.close()
	}
	return status, err
}

func (hc *httpConn) roundTrip(c call, buf *bytes.Buffer) (int, error) {
	w := hc.w[:0]
	w = append(w, c.method...)
	w = append(w, ' ')
	w = append(w, c.path...)
	w = append(w, " HTTP/1.1\r\nHost: "...)
	w = append(w, hc.host...)
	w = append(w, "\r\n"...)
	if c.token != "" {
		w = append(w, "Authorization: Bearer "...)
		w = append(w, c.token...)
		w = append(w, "\r\n"...)
	}
	if c.body != nil {
		w = append(w, "Content-Type: application/json\r\n"...)
	}
	if c.body != nil || c.method != "GET" {
		w = append(w, "Content-Length: "...)
		w = strconv.AppendInt(w, int64(len(c.body)), 10)
		w = append(w, "\r\n"...)
	}
	w = append(w, "\r\n"...)
	w = append(w, c.body...)
	hc.w = w
	if err := hc.conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return 0, err
	}
	if _, err := hc.conn.Write(w); err != nil {
		return 0, err
	}

	line, err := hc.r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length, chunked, closing := int64(-1), false, false
	for {
		line, err := hc.r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, fmt.Errorf("bad header line %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil || length < 0 {
				return 0, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			closing = bytes.EqualFold(value, []byte("close"))
		}
	}

	buf.Reset()
	switch {
	case status == 204 || status == 304 || (status >= 100 && status < 200) || c.method == "HEAD":
	case chunked:
		err = readChunked(hc.r, buf)
	case length >= 0:
		_, err = io.CopyN(buf, hc.r, length)
	default:
		_, err = buf.ReadFrom(hc.r)
		closing = true
	}
	if err != nil {
		return 0, err
	}
	if closing {
		hc.close()
	}
	return status, nil
}

func readChunked(r *bufio.Reader, buf *bytes.Buffer) error {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || n < 0 {
			return errors.New("bad chunk size")
		}
		if n == 0 {
			// Trailers, if any, end with an empty line.
			for {
				line, err := r.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if _, err := io.CopyN(buf, r, n); err != nil {
			return err
		}
		if _, err := r.Discard(2); err != nil {
			return err
		}
	}
}
