// /docs: Swagger UI over the app's own description. Served as a file: the page's
// Content-Security-Policy runs no inline script.
window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // The API key goes in with "Authorize" and is kept for the page's "Try it out" calls only.
    persistAuthorization: false,
  });
});
