package main

import "net/http"

// docRoutes registers the API description and its reference page.
func (s *Server) docRoutes(mux *http.ServeMux) {}
