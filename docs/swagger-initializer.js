// Starts Swagger UI on this service's own description. Kept out of index.html because the
// page's Content-Security-Policy allows no inline script.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    // Relative to the page, so that a path prefix added by a proxy is kept.
    url: new URL("openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    // BaseLayout has no top bar: no URL box that would invite loading other descriptions.
    layout: "BaseLayout",
    deepLinking: true,
    tryItOutEnabled: true,
    // A signed-in reader stays signed in across reloads (the token is kept in this
    // browser's localStorage until Logout in the Authorize dialog).
    persistAuthorization: true,
    displayRequestDuration: true,
    // The default sends the description to an outside validator service.
    validatorUrl: null
  });
});
